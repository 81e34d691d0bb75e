"""``python -m embedrec``: the command line, as torchrun's ``-m embedrec`` launches it."""

from embedrec.cli import main

main()
