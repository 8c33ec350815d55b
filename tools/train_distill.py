#!/usr/bin/env python
"""Thin wrapper: see distill/cli/train_distill.py (also installed as `distill-train-distill`)."""
from distill.cli.train_distill import cli_main

if __name__ == '__main__':
    cli_main()
