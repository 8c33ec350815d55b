#!/usr/bin/env python
"""Thin wrapper: see distill/cli/test.py (also installed as `distill-test`)."""
from distill.cli.test import cli_main

if __name__ == '__main__':
    cli_main()
