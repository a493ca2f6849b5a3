"""The instructions a callgrind profile counted, less quanta's TSC
calibration: wsloop::clock::Clock::new (never inlined) calibrates for a
span of wall time, so its count differs from run to run and would not
cancel between the short and the long run the callgrind scripts compare."""
import re
import subprocess


def calibration(path):
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", path],
                          capture_output=True, text=True).stdout
    found = re.search(r"^\s*([\d,]+) .*:wsloop::clock::Clock::new \[", text, re.M)
    return int(found.group(1).replace(",", "")) if found else 0


def instructions(path):
    """Total instructions of the profile at `path`, calibration excluded."""
    text = open(path).read()
    total = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
    return total - calibration(path)
