// The reference Java client (org.apache.kafka:kafka-clients 4.x) against one Kafka endpoint:
// Tributary's Kafka listener or a real Apache Kafka broker. tests/java_client.rs compiles this
// file with `javac -cp 'target/kafka-jars/*'`, runs it on both, and asserts the same expected
// behaviour on what it prints.
//
// usage: java -cp <classes>:<jars>/* ClientSuite BOOTSTRAP PREFIX BASE_TIMESTAMP_MS
//
// Every client keeps its defaults except what a step needs (serializers, a group id, manual
// commits, short session timeouts so the run stays quick). The steps, one method each:
//   admin              createTopics (3 partitions), createTopics again, describeTopics,
//                      listTopics, describeCluster
//   produce            a default producer (idempotent, acks=all): FIRST keyed records with
//                      explicit timestamps; the metadata of every send
//   group_first        member A alone: consumes at least half of each partition, commits
//                      exactly half, pauses
//   group_second       member B joins: a rebalance splits the partitions, both consume the rest
//                      and commit, then close
//   produce_more       the same producer: MORE records
//   resume             member C in the same group: resumes from the committed offsets
//   offsets_for_times  offsetsForTimes at several targets, beginningOffsets, endOffsets
//   seek_to_beginning  seekToBeginning on every partition, read to the end
//   group_admin        listConsumerGroupOffsets and describeConsumerGroups of the group
//
// Prints one JSON object per step on stdout ({"step": NAME, ...observations}); asserts nothing
// itself beyond what it needs to go on. Any exception, or a step that does not finish within
// STEP_DEADLINE, ends the program with exit status 1 and the reason on stderr.

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class ClientSuite {
    static final int PARTITIONS = 3;
    /** Records of the first produce step, and of produce_more. */
    static final int FIRST = 60;
    static final int MORE = 12;
    /** Record i has key "key-(i % KEYS)", value "value-i", timestamp base + i * STEP_MS. */
    static final int KEYS = 12;
    static final long STEP_MS = 1000;
    static final Duration STEP_DEADLINE = Duration.ofSeconds(60);
    static final Duration POLL = Duration.ofMillis(100);
    /** How long the resumed member keeps polling after it has what it expects, to see extras. */
    static final Duration QUIET = Duration.ofSeconds(2);
    static final Duration CALL = Duration.ofSeconds(30);

    final String bootstrap;
    final String topic;
    final String group;
    final long base;
    final List<TopicPartition> partitions = new ArrayList<>();
    /** Records per partition once produce (and later produce_more) is done. */
    final long[] produced = new long[PARTITIONS];
    /** What member A committed in group_first. */
    final long[] half = new long[PARTITIONS];

    KafkaProducer<String, String> producer;
    KafkaConsumer<String, String> memberA;
    Rebalances rebalancesA;
    int firstGeneration;
    String step = "start";

    ClientSuite(String bootstrap, String prefix, long base) {
        this.bootstrap = bootstrap;
        this.topic = prefix + "-events";
        this.group = prefix + "-group";
        this.base = base;
        for (int p = 0; p < PARTITIONS; p++) {
            partitions.add(new TopicPartition(topic, p));
        }
    }

    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("usage: ClientSuite BOOTSTRAP PREFIX BASE_TIMESTAMP_MS");
            System.exit(2);
        }
        ClientSuite suite = new ClientSuite(args[0], args[1], Long.parseLong(args[2]));
        try {
            suite.run();
        } catch (Throwable t) {
            System.out.flush();
            System.err.println("ClientSuite FAILED in step " + suite.step + ": " + t);
            t.printStackTrace();
            System.err.flush();
            // Client threads must not keep the JVM alive.
            Runtime.getRuntime().halt(1);
        }
        System.out.flush();
        System.exit(0);
    }

    void run() throws Exception {
        step = "admin";
        admin();
        step = "produce";
        produce(0, FIRST);
        step = "group_first";
        groupFirst();
        step = "group_second";
        groupSecond();
        step = "produce_more";
        produce(FIRST, MORE);
        producer.close(CALL);
        step = "resume";
        resume();
        step = "offsets_for_times";
        try (KafkaConsumer<String, String> reader = consumer(null, "reader")) {
            reader.assign(partitions);
            offsetsForTimes(reader);
            step = "seek_to_beginning";
            seekToBeginning(reader);
        }
        step = "group_admin";
        groupAdmin();
        step = "done";
    }

    // --- steps ------------------------------------------------------------------------------

    void admin() throws Exception {
        try (Admin admin = Admin.create(common("admin"))) {
            CreateTopicsResult created =
                    admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1)));
            created.all().get(CALL.toMillis(), TimeUnit.MILLISECONDS);
            int createdPartitions = created.numPartitions(topic).get();
            int createdReplication = created.replicationFactor(topic).get();
            String again = errorOf(admin.createTopics(
                    List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all());

            TopicDescription description = describeWhenKnown(admin);
            List<Object> described = new ArrayList<>();
            for (TopicPartitionInfo p : description.partitions()) {
                described.add(Json.obj(
                        "partition", p.partition(),
                        "leader", p.leader() == null ? null : p.leader().id(),
                        "replicas", nodeIds(p.replicas()),
                        "isr", nodeIds(p.isr())));
            }
            Set<String> listed = admin.listTopics().names().get();
            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = cluster.nodes().get();
            Node controller = cluster.controller().get();
            emit(Json.obj(
                    "step", "admin",
                    "topic", topic,
                    "created_partitions", createdPartitions,
                    "created_replication", createdReplication,
                    "create_again", again,
                    "described_name", description.name(),
                    "internal", description.isInternal(),
                    "partitions", described,
                    "listed", listed.contains(topic),
                    "nodes", nodeIds(nodes),
                    "controller", controller == null ? null : controller.id(),
                    "cluster_id", cluster.clusterId().get()));
        }
    }

    /** Sends records first..first+count (the producer is created on the first call). */
    void produce(int first, int count) throws Exception {
        boolean created = producer == null;
        Properties props = common("producer");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        // The configuration in effect, defaults included.
        ProducerConfig config = new ProducerConfig(props);
        if (created) {
            producer = new KafkaProducer<>(props);
        }
        List<Future<RecordMetadata>> sends = new ArrayList<>();
        for (int i = first; i < first + count; i++) {
            sends.add(producer.send(new ProducerRecord<>(topic, null, timestamp(i), key(i), value(i))));
        }
        producer.flush();
        List<Object> records = new ArrayList<>();
        for (int n = 0; n < count; n++) {
            int i = first + n;
            RecordMetadata m = sends.get(n).get(CALL.toMillis(), TimeUnit.MILLISECONDS);
            produced[m.partition()] = Math.max(produced[m.partition()], m.offset() + 1);
            records.add(Json.obj(
                    "i", i, "key", key(i), "value", value(i), "timestamp", timestamp(i),
                    "partition", m.partition(), "offset", m.offset(),
                    "metadata_timestamp", m.timestamp()));
        }
        emit(Json.obj(
                "step", created ? "produce" : "produce_more",
                "idempotence", config.getBoolean(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG),
                "acks", config.getString(ProducerConfig.ACKS_CONFIG),
                "records", records));
    }

    /** Member A alone: reads at least half of each partition, commits exactly half, pauses. */
    void groupFirst() throws Exception {
        for (int p = 0; p < PARTITIONS; p++) {
            half[p] = produced[p] / 2;
        }
        rebalancesA = new Rebalances();
        memberA = consumer(group, "member-a");
        memberA.subscribe(List.of(topic), rebalancesA);
        List<Object> records = new ArrayList<>();
        long[] next = new long[PARTITIONS];
        long deadline = deadline();
        while (true) {
            for (ConsumerRecord<String, String> r : memberA.poll(POLL)) {
                records.add(record(r));
                next[r.partition()] = r.offset() + 1;
            }
            boolean enough = memberA.assignment().size() == PARTITIONS;
            for (int p = 0; p < PARTITIONS; p++) {
                enough &= next[p] >= half[p];
            }
            if (enough) {
                break;
            }
            checkDeadline(deadline, "member A reads half of each partition: read " + records.size()
                    + " records, assignment " + memberA.assignment());
        }
        Map<TopicPartition, OffsetAndMetadata> commit = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            commit.put(partitions.get(p), new OffsetAndMetadata(half[p]));
            memberA.seek(partitions.get(p), half[p]);
        }
        memberA.commitSync(commit);
        // Nothing more from A until member B has joined: what A reads next is its share.
        memberA.pause(memberA.assignment());
        firstGeneration = memberA.groupMetadata().generationId();
        emit(Json.obj(
                "step", "group_first",
                "assignment", partitionIds(memberA.assignment()),
                "generation", firstGeneration,
                "records", records,
                "committed", committed(memberA),
                "rebalances", rebalancesA.events));
    }

    /** Member B joins; both read the rest of the partitions they own, commit and close. */
    void groupSecond() throws Exception {
        Rebalances rebalancesB = new Rebalances();
        KafkaConsumer<String, String> memberB = consumer(group, "member-b");
        memberB.subscribe(List.of(topic), rebalancesB);
        List<Object> recordsA = new ArrayList<>();
        List<Object> recordsB = new ArrayList<>();
        long deadline = deadline();
        while (true) {
            for (ConsumerRecord<String, String> r : memberA.poll(POLL)) {
                recordsA.add(record(r));
            }
            // A cooperative rebalance would keep some of A's partitions, still paused.
            if (memberA.groupMetadata().generationId() != firstGeneration && !memberA.paused().isEmpty()) {
                memberA.resume(memberA.paused());
            }
            for (ConsumerRecord<String, String> r : memberB.poll(POLL)) {
                recordsB.add(record(r));
            }
            if (splitAndRead(memberA, memberB)) {
                break;
            }
            checkDeadline(deadline, "members A and B share the partitions and read to the end: A "
                    + memberA.assignment() + " (generation " + memberA.groupMetadata().generationId()
                    + "), B " + memberB.assignment() + " (generation "
                    + memberB.groupMetadata().generationId() + ")");
        }
        memberA.commitSync();
        memberB.commitSync();
        Map<String, Object> assignments = Json.obj(
                "a", partitionIds(memberA.assignment()), "b", partitionIds(memberB.assignment()));
        Map<String, Object> generations = Json.obj(
                "a", memberA.groupMetadata().generationId(),
                "b", memberB.groupMetadata().generationId());
        Map<String, Object> committed = committed(memberA);
        memberA.close();
        memberB.close();
        memberA = null;
        emit(Json.obj(
                "step", "group_second",
                "first_generation", firstGeneration,
                "assignments", assignments,
                "generations", generations,
                "records", Json.obj("a", recordsA, "b", recordsB),
                "committed", committed,
                "rebalances", Json.obj("a", rebalancesA.events, "b", rebalancesB.events)));
    }

    /** Member C joins the (now empty) group: it must start at the committed offsets. */
    void resume() throws Exception {
        Rebalances rebalances = new Rebalances();
        try (KafkaConsumer<String, String> member = consumer(group, "member-c")) {
            Map<String, Object> before = committed(member);
            member.subscribe(List.of(topic), rebalances);
            List<Object> records = new ArrayList<>();
            long deadline = deadline();
            long quietUntil = Long.MAX_VALUE;
            while (System.nanoTime() < quietUntil) {
                for (ConsumerRecord<String, String> r : member.poll(POLL)) {
                    records.add(record(r));
                }
                if (records.size() >= MORE && quietUntil == Long.MAX_VALUE) {
                    quietUntil = System.nanoTime() + QUIET.toNanos();
                }
                checkDeadline(deadline, "member C reads the " + MORE + " new records: read "
                        + records.size() + ", assignment " + member.assignment());
            }
            member.commitSync();
            emit(Json.obj(
                    "step", "resume",
                    "committed_before", before,
                    "assignment", partitionIds(member.assignment()),
                    "records", records,
                    "committed_after", committed(member),
                    "rebalances", rebalances.events));
        }
    }

    void offsetsForTimes(KafkaConsumer<String, String> reader) {
        long last = timestamp(FIRST + MORE - 1);
        long[] targets = {
            base - 60_000, // before every record
            timestamp(0), // the first record's
            timestamp(30) + STEP_MS / 2, // between two records
            timestamp(45), // exactly a record's
            last, // the last record's
            last + 1, // past every record
        };
        List<Object> results = new ArrayList<>();
        for (long target : targets) {
            Map<TopicPartition, Long> query = new HashMap<>();
            for (TopicPartition tp : partitions) {
                query.put(tp, target);
            }
            Map<TopicPartition, OffsetAndTimestamp> found = reader.offsetsForTimes(query, CALL);
            Map<String, Object> byPartition = new TreeMap<>();
            for (TopicPartition tp : partitions) {
                OffsetAndTimestamp o = found.get(tp);
                byPartition.put(Integer.toString(tp.partition()),
                        o == null ? null : Json.obj("offset", o.offset(), "timestamp", o.timestamp()));
            }
            results.add(Json.obj("target", target, "found", byPartition));
        }
        emit(Json.obj(
                "step", "offsets_for_times",
                "results", results,
                "beginning", byPartition(reader.beginningOffsets(partitions, CALL)),
                "end", byPartition(reader.endOffsets(partitions, CALL))));
    }

    void seekToBeginning(KafkaConsumer<String, String> reader) {
        reader.seekToBeginning(partitions);
        List<Object> records = new ArrayList<>();
        long deadline = deadline();
        while (true) {
            for (ConsumerRecord<String, String> r : reader.poll(POLL)) {
                records.add(record(r));
            }
            boolean atEnd = true;
            for (TopicPartition tp : partitions) {
                atEnd &= reader.position(tp, CALL) >= produced[tp.partition()];
            }
            if (atEnd) {
                break;
            }
            checkDeadline(deadline, "seekToBeginning and read to the end: read " + records.size());
        }
        emit(Json.obj("step", "seek_to_beginning", "records", records));
    }

    void groupAdmin() throws Exception {
        try (Admin admin = Admin.create(common("admin-groups"))) {
            Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get(CALL.toMillis(), TimeUnit.MILLISECONDS);
            Map<String, Object> committed = new TreeMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offsets.entrySet()) {
                committed.put(Integer.toString(e.getKey().partition()), e.getValue().offset());
            }
            ConsumerGroupDescription description = admin.describeConsumerGroups(List.of(group))
                    .describedGroups().get(group).get(CALL.toMillis(), TimeUnit.MILLISECONDS);
            emit(Json.obj(
                    "step", "group_admin",
                    "committed", committed,
                    "group_id", description.groupId(),
                    "state", description.groupState().toString(),
                    "members", description.members().size()));
        }
    }

    // --- clients ----------------------------------------------------------------------------

    Properties common(String clientId) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("client.id", clientId);
        return props;
    }

    /** A consumer: in `group` with manual commits and short timeouts, or without a group. */
    KafkaConsumer<String, String> consumer(String group, String clientId) {
        Properties props = common(clientId);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        if (group != null) {
            props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
            props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
            // Also the rebalance timeout: how long a rebalance waits for a member to rejoin.
            props.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "30000");
        }
        return new KafkaConsumer<>(props);
    }

    /** Records each assignment change a member sees, in order. */
    static final class Rebalances implements ConsumerRebalanceListener {
        final List<Object> events = new ArrayList<>();

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> revoked) {
            events.add(Json.obj("revoked", partitionIds(revoked)));
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> assigned) {
            events.add(Json.obj("assigned", partitionIds(assigned)));
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> lost) {
            events.add(Json.obj("lost", partitionIds(lost)));
        }
    }

    // --- helpers ----------------------------------------------------------------------------

    static String key(int i) {
        return "key-" + (i % KEYS);
    }

    static String value(int i) {
        return "value-" + i;
    }

    long timestamp(int i) {
        return base + i * STEP_MS;
    }

    static Map<String, Object> record(ConsumerRecord<String, String> r) {
        return Json.obj(
                "partition", r.partition(), "offset", r.offset(), "key", r.key(), "value", r.value(),
                "timestamp", r.timestamp(), "timestamp_type", r.timestampType().toString());
    }

    /** Both members in the same new generation, owning every partition between them (each at
     * least one), each positioned at the end of what it owns. */
    boolean splitAndRead(KafkaConsumer<String, String> a, KafkaConsumer<String, String> b) {
        int generation = a.groupMetadata().generationId();
        if (generation == firstGeneration || generation != b.groupMetadata().generationId()
                || a.assignment().isEmpty() || b.assignment().isEmpty()
                || a.assignment().size() + b.assignment().size() != PARTITIONS
                || !a.paused().isEmpty()) {
            return false;
        }
        for (KafkaConsumer<String, String> member : List.of(a, b)) {
            for (TopicPartition tp : member.assignment()) {
                if (member.position(tp, CALL) < produced[tp.partition()]) {
                    return false;
                }
            }
        }
        return true;
    }

    Map<String, Object> committed(KafkaConsumer<String, String> member) {
        Map<TopicPartition, OffsetAndMetadata> committed =
                member.committed(new java.util.HashSet<>(partitions), CALL);
        Map<String, Object> out = new TreeMap<>();
        for (TopicPartition tp : partitions) {
            OffsetAndMetadata o = committed.get(tp);
            out.put(Integer.toString(tp.partition()), o == null ? null : o.offset());
        }
        return out;
    }

    static Map<String, Object> byPartition(Map<TopicPartition, Long> offsets) {
        Map<String, Object> out = new TreeMap<>();
        offsets.forEach((tp, o) -> out.put(Integer.toString(tp.partition()), o));
        return out;
    }

    static List<Integer> partitionIds(Collection<TopicPartition> tps) {
        return new ArrayList<>(new TreeSet<>(tps.stream().map(TopicPartition::partition).toList()));
    }

    static List<Integer> nodeIds(Collection<Node> nodes) {
        return new ArrayList<>(new TreeSet<>(nodes.stream().map(Node::id).toList()));
    }

    /** The topic's description, once the broker knows it (a real broker may lag its controller). */
    TopicDescription describeWhenKnown(Admin admin) throws Exception {
        long deadline = deadline();
        while (true) {
            try {
                return admin.describeTopics(List.of(topic)).topicNameValues().get(topic)
                        .get(CALL.toMillis(), TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof UnknownTopicOrPartitionException)) {
                    throw e;
                }
                checkDeadline(deadline, "describeTopics knows " + topic);
                Thread.sleep(100);
            }
        }
    }

    /** The simple name of the exception `future` fails with, or "none". */
    static String errorOf(org.apache.kafka.common.KafkaFuture<?> future) throws Exception {
        try {
            future.get(CALL.toMillis(), TimeUnit.MILLISECONDS);
            return "none";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        }
    }

    static long deadline() {
        return System.nanoTime() + STEP_DEADLINE.toNanos();
    }

    static void checkDeadline(long deadline, String waitingFor) {
        if (System.nanoTime() > deadline) {
            throw new IllegalStateException("timed out after " + STEP_DEADLINE.toSeconds()
                    + " s waiting until " + waitingFor);
        }
    }

    static void emit(Map<String, Object> observation) {
        System.out.println(Json.write(observation));
        System.out.flush();
    }

    /** Just enough JSON: maps, lists, strings, numbers, booleans and null. */
    static final class Json {
        static Map<String, Object> obj(Object... pairs) {
            Map<String, Object> m = new LinkedHashMap<>();
            for (int i = 0; i < pairs.length; i += 2) {
                m.put((String) pairs[i], pairs[i + 1]);
            }
            return m;
        }

        static String write(Object value) {
            StringBuilder out = new StringBuilder();
            write(out, value);
            return out.toString();
        }

        private static void write(StringBuilder out, Object value) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof Map<?, ?> map) {
                out.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : map.entrySet()) {
                    if (!first) {
                        out.append(',');
                    }
                    first = false;
                    string(out, e.getKey().toString());
                    out.append(':');
                    write(out, e.getValue());
                }
                out.append('}');
            } else if (value instanceof Collection<?> list) {
                out.append('[');
                boolean first = true;
                for (Object item : list) {
                    if (!first) {
                        out.append(',');
                    }
                    first = false;
                    write(out, item);
                }
                out.append(']');
            } else if (value instanceof Number || value instanceof Boolean) {
                out.append(value);
            } else {
                string(out, value.toString());
            }
        }

        private static void string(StringBuilder out, String s) {
            out.append('"');
            for (char c : s.toCharArray()) {
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            out.append('"');
        }
    }
}
