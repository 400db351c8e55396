"""asv benchmarks of fa_core, each beside the same benchmark of pymdp's numpy Agent."""
