"""The minidyn command line (installed as `minidyn.cli`; entry point `minidyn`)."""
