#!/usr/bin/env python
"""Thin wrapper: see distill/cli/compare.py (also installed as `distill-compare`)."""
from distill.cli.compare import main

if __name__ == '__main__':
    main()
