#!/usr/bin/env python
"""Thin wrapper: see distill/cli/train.py (also installed as `distill-train`)."""
from distill.cli.train import cli_main

if __name__ == '__main__':
    cli_main()
