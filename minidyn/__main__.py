"""`python -m minidyn ...` runs the command line, like the `minidyn` script."""
from minidyn.cli.main import main

main(prog_name="minidyn")
