# Sourced by nginx's configure after objs/Makefile is written: give fly-edge's
# C++ objects, and only them, the C++ standard and hidden visibility
# (nginx has no CXXFLAGS of its own).
for fly_src in $FLY_EDGE_SRCS; do
    fly_obj="addon/`basename \`dirname $fly_src\``/`basename $fly_src .cpp`.o"
    echo "$NGX_OBJS/$fly_obj: CFLAGS += -std=c++17 -fvisibility=hidden -Wno-missing-field-initializers $FLY_EDGE_CXXFLAGS" >> $NGX_MAKEFILE
done
