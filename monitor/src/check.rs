//! `pthwatch check`: what this kernel offers and which sensor backend pthwatch will use.
