"""Infrastructure shared by the carbon ETS services. No domain rules live here."""
