#!/usr/bin/env python
"""Thin wrapper: see distill/cli/repro_check.py."""
from distill.cli.repro_check import cli_main

if __name__ == '__main__':
    cli_main()
