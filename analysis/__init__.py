"""kvbench analysis: sweep folders -> the seed's figures, tables and report.html."""
