"""Command-line tools (``tools/*.py`` and the ``distill-*`` console scripts call these)."""
