"""The command line: argument parsing only; the work is done by the runner and serving layers."""
