"""The Luigi tasks: thin, each declares its parameters and requirements, loads, calls the library, writes."""
