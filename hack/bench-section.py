#!/usr/bin/env python3
"""bench-section.py SECTION_FILE HEADING NOTES_MARKER: put a benchmark script's section into
BENCHMARKS.md. The section (SECTION_FILE, starting with HEADING) replaces the one that starts
with HEADING, up to the next "## " heading, or is appended when there is none; hand-written
notes that follow NOTES_MARKER inside the old section are kept after the new one."""
import sys

sec_file, head, marker = sys.argv[1:4]
sec = open(sec_file).read().rstrip("\n") + "\n"
try:
    text = open("BENCHMARKS.md").read()
except FileNotFoundError:
    text = ""
i = text.find(head)
if i < 0:
    text = text.rstrip("\n") + "\n\n" + sec
else:
    j = text.find("\n## ", i + len(head))
    old = text[i:] if j < 0 else text[i:j + 1]
    k = old.find(marker)
    if k >= 0:
        sec = sec + "\n" + old[k:].rstrip("\n") + "\n"
    text = text[:i] + sec + ("" if j < 0 else text[j:])
open("BENCHMARKS.md", "w").write(text)
