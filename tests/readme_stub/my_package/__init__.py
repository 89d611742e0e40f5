"""The README's ``my_package``: a reader's provider, here the in-memory one under that name.

``tests/test_readme.py`` puts ``tests/readme_stub`` on ``PYTHONPATH`` so the README's
commands for "your provider" run as written.
"""
