"""TEST DOUBLE (see tests/standins/README.md)."""
