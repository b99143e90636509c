/*
 * nodlclose.c - an LD_PRELOAD for sanitizer runs: dlclose does nothing.
 * Open MPI loads its components with dlopen and unloads the ones it does
 * not select; an allocation such a component made stays, and
 * LeakSanitizer then reports it from "<unknown module>", which no
 * suppression can name.  With the components kept mapped, their leaks
 * are reported under their own file names and suppressed by
 * tests/sanitizer/lsan.supp, and ours still show.
 */
int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
