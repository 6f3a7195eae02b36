"""Who is told what about each event: pure, no I/O."""
