"""Pure domain logic of the allowance registry: no I/O, no framework imports."""
