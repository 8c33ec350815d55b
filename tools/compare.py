#!/usr/bin/env python
"""Thin wrapper: see distill/cli/compare.py (also installed as `distill-compare`)."""
from distill.cli.compare import cli_main

if __name__ == '__main__':
    cli_main()
