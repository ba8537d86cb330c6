"""Workbook helpers: the workbook recipe, papermill runs, parameter rules, display, plots and widgets."""
