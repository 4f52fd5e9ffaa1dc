"""Figures people would rather look at than read, one module per kind of result: a stage imports only the
figures it draws, so changing one re-runs only the stages that draw it."""
