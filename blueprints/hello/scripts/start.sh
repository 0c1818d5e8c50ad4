# Runs in the node's home with GANTRY_NODE, GANTRY_INDEX, ... set.
cp hello/greeting.txt hello/started
echo "started on $GANTRY_NODE: $(cat hello/started)"
