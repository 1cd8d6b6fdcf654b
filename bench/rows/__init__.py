"""The row families of the table, one module each; every module has `rows(bench) -> list[Row]`."""
