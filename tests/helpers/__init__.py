"""Helpers the tests share: the project's paths and copies, test images, small models, recipes and metrics.

Test files import from here (`from helpers.project import ROOT`), never from one another or from conftest.py,
which holds only fixtures; pytest puts tests/ on sys.path because conftest.py lives there.
"""
