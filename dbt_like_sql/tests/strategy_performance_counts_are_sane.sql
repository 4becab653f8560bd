-- Wins and losses never exceed trades; win rate is a percentage.
SELECT user_id, strategy_id, trades, wins, losses, win_rate
FROM strategy_performance
WHERE wins + losses > trades OR win_rate < 0 OR win_rate > 100
