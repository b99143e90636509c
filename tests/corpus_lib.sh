# corpus_lib.sh - sourced by the tests that train on real text
# (e2e_train.sh, compress_convergence.sh):
#   corpus_text FILE   the fortunes corpus concatenated into FILE, or, when
#                      the Debian package is missing, a synthetic English
#                      text of the same size (said on stdout), so that the
#                      tests still run;
#   bigram_loss FILE   the validation cross-entropy (nats per byte) of a
#                      byte bigram model fitted on the first 90% of FILE
#                      and measured on the last 10% (mpitron prepare's
#                      split), add-0.01 smoothing: the bar a trained model
#                      must clear to show it learned more than bigrams.
FORTUNES=/usr/share/games/fortunes
corpus_text() {
    if [ -d "$FORTUNES" ]; then
        find "$FORTUNES" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' |
            sort | xargs cat > "$1"
    else
        echo "note: $FORTUNES missing (Debian package fortunes): a synthetic text"
        awk 'BEGIN {
            split("the of and to a in is it you that he was for on are " \
                  "with as his they be at one have this from or had by " \
                  "word but what some we can out other were all there " \
                  "when up use your how said an each she which do their " \
                  "time if will way about many then them write would " \
                  "like so these her long make thing see him two has " \
                  "look more day could go come did number sound no most " \
                  "people my over know water than call first who may " \
                  "down side been now find any new work part take get", w)
            n = 0; for (k in w) n++
            s = 12345; out = 0
            while (out < 2500000) {
                len = 4 + s % 9; line = ""
                for (i = 0; i < len; i++) {
                    s = (s * 1103515245 + 12345) % 2147483648
                    word = w[1 + int(s / 65536) % n]
                    if (i == 0) word = toupper(substr(word, 1, 1)) substr(word, 2)
                    line = line (i ? " " : "") word
                }
                line = line (s % 3 ? "." : "?")
                print line; out += length(line) + 1
            }
        }' > "$1"
    fi
}
bigram_loss() {
    od -An -v -tu1 "$1" | awk -v n="$(wc -c < "$1")" '
        BEGIN { ntr = n - int(n * 0.1) }
        { for (i = 1; i <= NF; i++) {
              b = $i; k++
              if (k > 1 && k <= ntr) { c[p "," b]++; t[p]++ }
              else if (k > ntr + 1) { key[m] = p "," b; ctx[m++] = p }
              p = b } }
        END { for (j = 0; j < m; j++)
                  ce -= log((c[key[j]] + 0.01) / (t[ctx[j]] + 2.56))
              printf "%.6f\n", ce / m }'
}
