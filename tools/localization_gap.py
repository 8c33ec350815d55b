#!/usr/bin/env python
"""Thin wrapper: see distill/cli/localization_gap.py."""
from distill.cli.localization_gap import cli_main

if __name__ == '__main__':
    cli_main()
