"""The emissions calculation engine shared by reporting and verification (domain, no I/O)."""
