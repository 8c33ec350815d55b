#!/usr/bin/env python
"""Thin wrapper: see distill/cli/browse_dataset.py (also installed as `distill-browse-dataset`)."""
from distill.cli.browse_dataset import cli_main

if __name__ == '__main__':
    cli_main()
