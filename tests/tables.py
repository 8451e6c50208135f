"""Reading Markdown tables that the benchmarks write (shared by the benchmark smoke tests)."""


def cells(md: str, first: str) -> list[str]:
  """The cells of the Markdown table row whose first cell starts with ``first``."""
  for line in md.splitlines():
    if line.startswith(f"| {first}"):
      return [c.strip() for c in line.strip("|").split("|")]
  raise AssertionError(f"no table row starting with {first!r} in:\n{md}")
