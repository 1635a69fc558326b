"""What `make demo` and `make bench` run on where no Hub can be reached: the offline demo model family (trained
here, in the Hub's cache layout) and the writer of that layout. A sweep of a real model never imports this."""
