#!/usr/bin/env python
"""Thin wrapper: see distill/cli/draw_regions.py."""
from distill.cli.draw_regions import main

if __name__ == '__main__':
    main()
