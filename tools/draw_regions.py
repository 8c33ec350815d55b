#!/usr/bin/env python
"""Thin wrapper: see distill/cli/draw_regions.py."""
from distill.cli.draw_regions import cli_main

if __name__ == '__main__':
    cli_main()
