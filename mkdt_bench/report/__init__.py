"""Reading results back: row facets, statistics, tables in every format, figures."""
