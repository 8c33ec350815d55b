#!/usr/bin/env python
"""Thin wrapper: see distill/cli/grid_stats.py."""
from distill.cli.grid_stats import cli_main

if __name__ == '__main__':
    cli_main()
