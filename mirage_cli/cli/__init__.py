"""The ``mirage`` command line: the Typer app, its commands, shared flags and the progress display. It
parses and calls; the library does the work.
"""
