#!/usr/bin/env python
"""Thin wrapper: see distill/cli/demo.py (`make demo`)."""
from distill.cli.demo import cli_main

if __name__ == '__main__':
    cli_main()
