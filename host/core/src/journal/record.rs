//! TODO (protocol helper): typed journal records.
