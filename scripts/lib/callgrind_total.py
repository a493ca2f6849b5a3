"""The instructions a callgrind profile counted, less quanta's TSC
calibration: wsloop::clock::Clock::new (never inlined) calibrates for a
span of wall time, so its count differs from run to run and would not
cancel between the short and the long run the callgrind scripts compare."""
import re
import subprocess


def calibration(path):
    """Clock::new's inclusive count. With line info, callgrind lists it once
    per source file its inlined code came from (clock.rs, once_cell's
    lib.rs), each inclusive of the calibration: the largest is the call.
    --threshold=100 lists every function: by default callgrind_annotate
    stops once the listed ones add up to 99.9%, and in a long profile that
    cut can fall above Clock::new."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", path],
                          capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^\s*([\d,]+) .*:wsloop::clock::Clock::new(?: \[.*\])?$", text, re.M)
    if not found:
        # The peers have no such clock; wsloop must (it is #[inline(never)]).
        command = re.search(r"^cmd: (.*)$", open(path).read(), re.M)
        if command and "/wsloop " in command.group(1) + " ":
            raise SystemExit(f"{path}: wsloop::clock::Clock::new not in the profile: is it still #[inline(never)]?")
        return 0
    return max(int(n.replace(",", "")) for n in found)


def instructions(path):
    """Total instructions of the profile at `path`, calibration excluded."""
    text = open(path).read()
    total = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
    return total - calibration(path)
