%% tests/apps_erlang.erl - an echo server and its checking clients on
%% Erlang/OTP's gen_tcp (tests/t_apps_erlang.sh): the BEAM's own poll
%% thread, EPOLLONESHOT registrations re-armed at each {active, once},
%% readv/writev, a process per connection.
-module(apps_erlang).
-export([server/1, client/1]).

%% server PORT: accept forever; each connection echoes in a process of
%% its own, the socket handed over with controlling_process.
server([PortA]) ->
    {ok, L} = gen_tcp:listen(atom_to_integer(PortA),
                             [binary, {active, false}, {reuseaddr, true}, {ip, {127, 0, 0, 1}}]),
    accept_loop(L).

accept_loop(L) ->
    {ok, S} = gen_tcp:accept(L),
    Pid = spawn(fun() -> receive go -> ok end, echo(S) end),
    ok = gen_tcp:controlling_process(S, Pid),
    Pid ! go,
    accept_loop(L).

echo(S) ->
    ok = inet:setopts(S, [{active, once}]),
    receive
        {tcp, S, Data} -> ok = gen_tcp:send(S, Data), echo(S);
        {tcp_closed, S} -> ok;
        {tcp_error, S, _} -> ok
    end.

%% client PORT ROUNDS CONNS: CONNS connections at once, each ROUNDS
%% numbered round trips, then 4 MiB of random bytes sent by one process
%% while another reads the echo; prints one line and exits 0 only if
%% every byte came back.
client([PortA, RoundsA, ConnsA]) ->
    Port = atom_to_integer(PortA),
    Rounds = atom_to_integer(RoundsA),
    Conns = atom_to_integer(ConnsA),
    Self = self(),
    [spawn(fun() -> Self ! {done, I, catch conn(Port, Rounds, I)} end) || I <- lists:seq(1, Conns)],
    Results = [receive {done, I, R} -> {I, R} after 60000 -> {I, timeout} end
               || I <- lists:seq(1, Conns)],
    Bad = [X || {_, R} = X <- Results, R =/= ok],
    io:format("~p connections, ~p round trips and 4 MiB each: ~p~n",
              [Conns, Rounds, case Bad of [] -> ok; _ -> Bad end]),
    halt(case Bad of [] -> 0; _ -> 1 end).

conn(Port, Rounds, I) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    lists:foreach(fun(N) ->
        M = list_to_binary(io_lib:format("conn ~b msg ~8..0b~n", [I, N])),
        ok = gen_tcp:send(S, M),
        {ok, M} = gen_tcp:recv(S, byte_size(M), 10000)
    end, lists:seq(1, Rounds)),
    Big = rand:bytes(4 * 1024 * 1024),
    Me = self(),
    spawn(fun() -> Me ! {sent, gen_tcp:send(S, Big)} end),
    {ok, Big} = gen_tcp:recv(S, byte_size(Big), 30000),
    receive {sent, ok} -> ok after 30000 -> exit(send_timeout) end,
    ok = gen_tcp:close(S).

atom_to_integer(A) -> list_to_integer(atom_to_list(A)).
