"""TEST DOUBLE of slime (THUDM/slime), for heapa's contract tests only: see tests/standins/README.md."""

STANDIN = True
