-- The groups of the JaSMIn section: its 15 disease groups (public reference table).
-- JaSMIn の疾患群の一覧（公開の参照表）
SELECT disease_group AS key, min(group_ja) AS name_ja, min(group_en) AS name_en
FROM jasmin_disease
GROUP BY disease_group
ORDER BY disease_group
