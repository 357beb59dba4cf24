"""The lab: the only layer that binds shipped models to the engines.

Named cases, plots, the report and the ``vilab`` command line.
"""
