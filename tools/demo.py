#!/usr/bin/env python
"""Thin wrapper: see distill/cli/demo.py (`make demo`)."""
from distill.cli.demo import main

if __name__ == '__main__':
    main()
