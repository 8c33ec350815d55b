#!/usr/bin/env python
"""Thin wrapper: see distill/cli/publish.py."""
from distill.cli.publish import cli_main

if __name__ == '__main__':
    cli_main()
