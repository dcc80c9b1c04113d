"""Reports: figures (``plots``), the files of one command (``writer``) and per-epoch tables of a
run directory (``tracking``). The writer's functions are importable from here."""
from .writer import (
    analysis_figures,
    compare_figures,
    compare_table,
    format_summary,
    staged_output,
    track_figures,
    write_analysis,
    write_compare,
    write_track,
)

__all__ = ["staged_output", "format_summary", "write_analysis", "write_track", "write_compare",
           "analysis_figures", "track_figures", "compare_figures", "compare_table"]
