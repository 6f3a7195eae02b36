"""Pure domain logic of the direct reporting system: no I/O, no framework imports."""
