#!/usr/bin/env python
"""Thin wrapper: see distill/cli/sweep_recipe.py."""
from distill.cli.sweep_recipe import cli_main

if __name__ == '__main__':
    cli_main()
