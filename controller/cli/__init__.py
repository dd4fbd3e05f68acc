"""`canaryctl`, the command line: thin commands over the library, one clear line per error."""
