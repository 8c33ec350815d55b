#!/usr/bin/env python
"""Thin wrapper: see distill/cli/export_student.py (also installed as `distill-export-student`)."""
from distill.cli.export_student import cli_main

if __name__ == '__main__':
    cli_main()
