"""``make bench`` entry for the IMAP figures: runs bench/imap_load.py with
its defaults (1, 10 and 50 sessions; a 100,000-message folder; 1,000 idle
connections; a 50 MiB message). Run ``python -m bench.imap_load --help``
for a shorter run."""

from bench import imap_load


def main():
    imap_load.main([])


if __name__ == "__main__":
    main()
