# Plots a monitor.py sample file: read and write throughput, and memory, over time.
# usage: gnuplot -e "input='X.tsv'; output='X.png'; title='...'" bench/plot_scale.gp
# Columns: seconds rchar read_bytes write_bytes rss_kib anon_kib file_kib cgroup_kib.
set terminal pngcairo size 1000,700 noenhanced
set output output
set multiplot layout 2,1 title title
set grid
set key below
set xlabel "seconds"

# Throughput between consecutive samples, from the cumulative byte counters; each curve
# keeps its own previous sample because gnuplot reads the file once per curve.
tr = NaN; br = NaN; tw = NaN; bw = NaN
rate_read(t, b) = (r = (b - br) / (t - tr) / 1e6, tr = t, br = b, r)
rate_write(t, b) = (w = (b - bw) / (t - tw) / 1e6, tw = t, bw = b, w)
set ylabel "MB/s"
set title "disk throughput (/proc/PID/io read_bytes, write_bytes)"
plot input using 1:(rate_read($1, $3)) with lines lw 1.5 title "read", \
     '' using 1:(rate_write($1, $4)) with lines lw 1.5 title "write"

set ylabel "MiB"
set title "memory"
plot input using 1:($6 / 1024) with lines lw 1.5 title "anonymous (RssAnon)", \
     '' using 1:($7 / 1024) with lines lw 1.5 title "mapped file (RssFile)", \
     '' using 1:($8 / 1024) with lines lw 1.5 title "cgroup charge (page cache included)"
unset multiplot
